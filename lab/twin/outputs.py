"""Recorded outputs the twin's workloads print (from gpu-stack.md: the CUDA sample's real text)."""

VECTORADD_PASSED = """[Vector addition of 50000 elements]
Copy input data from the host memory to the CUDA device
CUDA kernel launch with 196 blocks of 256 threads
Copy output data from the CUDA device to the host memory
Test PASSED
Done
"""

VECTORADD_FAILED = """[Vector addition of 50000 elements]
Failed to allocate device vector A (error code CUDA-capable device(s) is/are busy or unavailable)!
"""

DEVICE_PLUGIN_START = "Starting NVIDIA Device Plugin\nLoading configuration\n"
DRIVER_IN_USE = "Could not unload NVIDIA driver kernel modules, driver is in use"
