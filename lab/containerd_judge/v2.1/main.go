// containerd-judge (containerd 2.0 - 2.2): does containerd start with this config, and do its CRI plugins load?
//
// Built by lab/build_node.py inside a copy of containerd's own module (as cmd/containerd-judge), so it uses
// containerd's own code: the default config of cmd/containerd, server/config.LoadConfig (what `containerd`
// runs at start), then, as server.New does, MigrateConfig when the merged version is below the current one,
// server.LoadPlugins (the plugin graph without disabled plugins), each loaded plugin's ConfigMigration for
// every version from the loaded one (the CRI plugins' v2 -> v3 move), each plugin's config decoded as
// server.New does, and the CRI plugins'
// validation (internal/cri/config ValidateRuntimeConfig / ValidateImageConfig / ValidateServerConfig).
// Plugins are not started. With --root it chroots first (the lab node's host view). Prints one JSON object.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"sort"
	"syscall"

	_ "github.com/containerd/containerd/v2/cmd/containerd/builtins"
	"github.com/containerd/containerd/v2/cmd/containerd/command"
	"github.com/containerd/containerd/v2/cmd/containerd/server"
	srvconfig "github.com/containerd/containerd/v2/cmd/containerd/server/config"
	criconfig "github.com/containerd/containerd/v2/internal/cri/config"
	"github.com/containerd/containerd/v2/version"
	"github.com/containerd/log"
)

const (
	runtimeID = "io.containerd.cri.v1.runtime"
	imagesID  = "io.containerd.cri.v1.images"
	grpcCRIID = "io.containerd.grpc.v1.cri"
)

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
	out := verdict{CRIPlugin: runtimeID, Containerd: "2", Imports: []string{}, Runtimes: []string{}}
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
	ctx := log.WithLogger(context.Background(), log.L)
	cfg := command.LabDefaultConfig()
	if err := srvconfig.LoadConfig(ctx, *path, cfg); err != nil {
		out.Error = err.Error()
		emit()
		return
	}
	loadedVersion := cfg.Version
	if loadedVersion < version.ConfigVersion { // server.New
		if err := cfg.MigrateConfig(ctx); err != nil {
			out.Error = err.Error()
			emit()
			return
		}
	}
	out.Version = cfg.Version
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
	// server.New: each plugin's own migration, one version at a time, after LoadPlugins
	for v := loadedVersion; v < version.ConfigVersion; v++ {
		for _, p := range plugins {
			if p.ConfigMigration != nil {
				if err := p.ConfigMigration(ctx, v, cfg.Plugins); err != nil {
					out.Error = err.Error()
					emit()
					return
				}
			}
		}
	}
	out.DaemonUp = true
	errs := map[string]string{runtimeID: fmt.Sprintf("plugin %s is not loaded (disabled_plugins)", runtimeID)}
	for _, p := range plugins {
		if p.Config == nil {
			continue
		}
		id := p.URI()
		pc, err := cfg.Decode(ctx, id, p.Config)
		if err != nil { // server.New returns this error: containerd exits
			out.DaemonUp = false
			out.Error = err.Error()
			emit()
			return
		}
		var verr error
		wrap := "invalid cri image config"
		switch id {
		case runtimeID:
			c := pc.(*criconfig.RuntimeConfig)
			_, verr = criconfig.ValidateRuntimeConfig(ctx, c)
			wrap = "invalid plugin config"
			for name := range c.ContainerdConfig.Runtimes {
				out.Runtimes = append(out.Runtimes, name)
			}
			sort.Strings(out.Runtimes)
			out.DefaultRuntime = c.ContainerdConfig.DefaultRuntimeName
		case imagesID:
			_, verr = criconfig.ValidateImageConfig(ctx, pc.(*criconfig.ImageConfig))
		case grpcCRIID:
			_, verr = criconfig.ValidateServerConfig(ctx, pc.(*criconfig.ServerConfig))
		default:
			continue
		}
		delete(errs, id)
		if verr != nil {
			// each plugin's InitFn wraps it; server.New logs `failed to load plugin <id>` with that error
			errs[id] = fmt.Sprintf("failed to load plugin %s: %s: %v", id, wrap, verr)
		}
	}
	for _, id := range []string{runtimeID, imagesID, grpcCRIID} {
		if e, ok := errs[id]; ok && out.Error == "" {
			out.Error = e
		}
	}
	out.OK = out.Error == ""
	emit()
}
