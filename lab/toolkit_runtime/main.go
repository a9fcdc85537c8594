// toolkit-runtime: the runtime-configuration half of the NVIDIA container toolkit container
// (nvidia-ctk-installer), for the lab.
//
// Built by lab/build_node.py against github.com/NVIDIA/nvidia-container-toolkit at the version the chart's
// toolkit image tag names. It declares the installer's own flags (container/runtime.Flags and toolkit.Flags,
// read from the same environment variables the toolkit DaemonSet sets), validates them with the installer's
// runtime.Options.Validate and runs the installer's own containerd Setup (install) or Cleanup (pod deleted).
// What it leaves out of nvidia-ctk-installer: the toolkit artifact install (toolkit.Install copies
// libnvidia-container and nvidia-container-cli from the image, which the Go module cannot build) and the
// restart of containerd: it runs with restart mode "none" and prints the restart mode the pod asked for, so
// the lab restarts the node's containerd itself. With --root it chroots first (the node's host view).
// Prints one JSON line with the resolved options on stdout; the installer's log goes to stderr.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"syscall"

	"github.com/sirupsen/logrus"
	"github.com/urfave/cli/v3"

	"github.com/NVIDIA/nvidia-container-toolkit/cmd/nvidia-ctk-installer/container/runtime"
	"github.com/NVIDIA/nvidia-container-toolkit/cmd/nvidia-ctk-installer/toolkit"
)

const toolkitRoot = "/usr/local/nvidia/toolkit" // the installer's default --toolkit-install-dir + "toolkit"

type resolved struct {
	Action        string   `json:"action"`
	Config        string   `json:"config"`
	DropIn        string   `json:"drop_in"`
	DropInHost    string   `json:"drop_in_host_path"`
	Sources       []string `json:"config_sources"`
	RestartMode   string   `json:"restart_mode"`
	SetAsDefault  bool     `json:"set_as_default"`
	RuntimeName   string   `json:"runtime_name"`
	EnableCDI     bool     `json:"enable_cdi"`
	Socket        string   `json:"socket"`
	HostRootMount string   `json:"host_root"`
}

func main() {
	logger := logrus.New()
	logger.SetOutput(os.Stderr)
	var (
		opts    runtime.Options
		tkOpts  toolkit.Options
		root    string
		cleanup bool
	)
	flags := []cli.Flag{
		&cli.StringFlag{Name: "root", Destination: &root, Usage: "chroot here first (the lab node's host view)"},
		&cli.BoolFlag{Name: "cleanup", Destination: &cleanup, Usage: "run the installer's cleanup (pod deleted)"},
	}
	flags = append(flags, toolkit.Flags(&tkOpts)...)
	flags = append(flags, runtime.Flags(&opts)...)
	cmd := &cli.Command{
		Name:  "toolkit-runtime",
		Flags: flags,
		Action: func(ctx context.Context, c *cli.Command) error {
			if root != "" {
				if err := syscall.Chroot(root); err != nil {
					return fmt.Errorf("chroot %s: %w", root, err)
				}
				_ = os.Chdir("/")
			}
			if err := opts.Validate(logger, c, "containerd", toolkitRoot, &tkOpts); err != nil {
				return err
			}
			out := resolved{Action: "setup", Config: opts.TopLevelConfigPath, DropIn: opts.DropInConfig,
				DropInHost: opts.DropInConfigHostPath, Sources: opts.ConfigSources, RestartMode: opts.RestartMode,
				SetAsDefault: opts.SetAsDefault, RuntimeName: opts.RuntimeName, EnableCDI: opts.EnableCDI,
				Socket: opts.Socket, HostRootMount: opts.HostRootMount}
			opts.RestartMode = "none" // the lab restarts the node's containerd itself (see above)
			configurer := runtime.NewConfigurer("containerd", false, false)
			var err error
			if cleanup {
				out.Action = "cleanup"
				err = configurer.Cleanup(c, &opts)
			} else {
				err = configurer.Setup(c, &opts)
			}
			b, _ := json.Marshal(out)
			fmt.Println(string(b))
			return err
		},
	}
	if err := cmd.Run(context.Background(), os.Args); err != nil {
		logger.Errorf("error running nvidia-ctk-installer: %v", err)
		os.Exit(1)
	}
}
