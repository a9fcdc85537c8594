// Host-level CUDA smoke test of the GPU node conformance suite: add two vectors on the GPU, check every
// element on the CPU, print "Test PASSED" and exit 0, or print what failed and exit 1.
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cuda_runtime.h>

__global__ void vector_add(const float *a, const float *b, float *c, int n) {
  int i = blockDim.x * blockIdx.x + threadIdx.x;
  if (i < n) c[i] = a[i] + b[i];
}

static int check(cudaError_t err, const char *what) {
  if (err != cudaSuccess) {
    std::fprintf(stderr, "Failed to %s (error code %s)!\n", what, cudaGetErrorString(err));
    return 1;
  }
  return 0;
}

int main() {
  const int n = 50000;
  const size_t bytes = n * sizeof(float);
  std::printf("[Vector addition of %d elements]\n", n);
  float *a = (float *)std::malloc(bytes), *b = (float *)std::malloc(bytes), *c = (float *)std::malloc(bytes);
  for (int i = 0; i < n; ++i) {
    a[i] = std::rand() / (float)RAND_MAX;
    b[i] = std::rand() / (float)RAND_MAX;
  }
  float *da = nullptr, *db = nullptr, *dc = nullptr;
  if (check(cudaMalloc(&da, bytes), "allocate device vector A") || check(cudaMalloc(&db, bytes), "allocate device vector B") ||
      check(cudaMalloc(&dc, bytes), "allocate device vector C"))
    return 1;
  if (check(cudaMemcpy(da, a, bytes, cudaMemcpyHostToDevice), "copy vector A to the device") ||
      check(cudaMemcpy(db, b, bytes, cudaMemcpyHostToDevice), "copy vector B to the device"))
    return 1;
  const int threads = 256, blocks = (n + threads - 1) / threads;
  std::printf("CUDA kernel launch with %d blocks of %d threads\n", blocks, threads);
  vector_add<<<blocks, threads>>>(da, db, dc, n);
  if (check(cudaGetLastError(), "launch the vector_add kernel") ||
      check(cudaMemcpy(c, dc, bytes, cudaMemcpyDeviceToHost), "copy vector C from the device"))
    return 1;
  for (int i = 0; i < n; ++i) {
    if (std::fabs(a[i] + b[i] - c[i]) > 1e-5f) {
      std::fprintf(stderr, "Result verification failed at element %d!\n", i);
      return 1;
    }
  }
  cudaFree(da);
  cudaFree(db);
  cudaFree(dc);
  std::free(a);
  std::free(b);
  std::free(c);
  std::printf("Test PASSED\nDone\n");
  return 0;
}
