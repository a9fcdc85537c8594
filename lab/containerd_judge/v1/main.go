// containerd-judge (containerd 1.7): does containerd start with this config, and does its CRI plugin load?
//
// Built by lab/build_node.py inside a copy of containerd's own module (as cmd/containerd-judge), so it uses
// containerd's own code: the default config of cmd/containerd, services/server/config.LoadConfig (root config
// and imports, containerd's merge), server.LoadPlugins (the plugin graph without disabled plugins), each
// plugin's config decoded as server.New does, and the CRI plugin's pkg/cri/config.ValidatePluginConfig. Plugins
// are not started. With --root it chroots first (the lab node's host view). Prints one JSON object.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"sort"
	"syscall"

	_ "github.com/containerd/containerd/cmd/containerd/builtins"
	"github.com/containerd/containerd/cmd/containerd/command"
	criconfig "github.com/containerd/containerd/pkg/cri/config"
	"github.com/containerd/containerd/services/server"
	srvconfig "github.com/containerd/containerd/services/server/config"
	"github.com/containerd/log"
)

const criID = "io.containerd.grpc.v1.cri"

type verdict struct {
	DaemonUp       bool     `json:"daemon_up"`
	OK             bool     `json:"ok"`
	Error          string   `json:"error,omitempty"`
	Version        int      `json:"version"`
	Imports        []string `json:"imports"`
	Runtimes       []string `json:"runtimes"`
	DefaultRuntime string   `json:"default_runtime"`
	CRIPlugin      string   `json:"cri_plugin"`
	Containerd     string   `json:"containerd_major"`
}

func main() {
	root := flag.String("root", "", "chroot here first (a lab node's host view)")
	path := flag.String("config", "/etc/containerd/config.toml", "containerd's --config")
	flag.Parse()
	log.L.Logger.SetOutput(os.Stderr)
	out := verdict{CRIPlugin: criID, Containerd: "1", Imports: []string{}, Runtimes: []string{}}
	if *root != "" {
		if err := syscall.Chroot(*root); err != nil {
			fmt.Fprintf(os.Stderr, "chroot %s: %v\n", *root, err)
			os.Exit(2)
		}
		_ = os.Chdir("/")
	}
	emit := func() {
		b, _ := json.Marshal(out)
		fmt.Println(string(b))
	}
	ctx := context.Background()
	cfg := command.LabDefaultConfig()
	// cmd/containerd: a config that does not exist is fine only when --config was not given (it always is)
	if err := srvconfig.LoadConfig(*path, cfg); err != nil {
		out.Error = err.Error()
		emit()
		return
	}
	out.Version = cfg.GetVersion()
	for _, p := range cfg.Imports {
		if p != *path {
			out.Imports = append(out.Imports, p)
		}
	}
	sort.Strings(out.Imports)
	plugins, err := server.LoadPlugins(ctx, cfg)
	if err != nil {
		out.Error = err.Error()
		emit()
		return
	}
	out.DaemonUp = true
	criErr := fmt.Sprintf("plugin %s is not loaded (disabled_plugins)", criID)
	for _, p := range plugins {
		if p.Config == nil {
			continue
		}
		pc, err := cfg.Decode(p)
		if err != nil { // server.New returns this error: containerd exits
			out.DaemonUp = false
			out.Error = err.Error()
			emit()
			return
		}
		if p.URI() != criID {
			continue
		}
		c := pc.(*criconfig.PluginConfig)
		_, verr := criconfig.ValidatePluginConfig(log.WithLogger(ctx, log.L), c)
		for name := range c.ContainerdConfig.Runtimes {
			out.Runtimes = append(out.Runtimes, name)
		}
		sort.Strings(out.Runtimes)
		out.DefaultRuntime = c.ContainerdConfig.DefaultRuntimeName
		criErr = ""
		if verr != nil {
			// pkg/cri's init wraps it; server.New logs `failed to load plugin <id>` with that error
			criErr = fmt.Sprintf("failed to load plugin %s: invalid plugin config: %v", criID, verr)
		}
	}
	if criErr != "" {
		out.Error = criErr
	} else {
		out.OK = true
	}
	emit()
}
