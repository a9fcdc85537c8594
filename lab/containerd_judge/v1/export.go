// Lab addition, compiled into containerd's own cmd/containerd/command package by lab/build_node.py (never part
// of containerd): exports the default config containerd's main starts from, so the judge loads exactly as
// `containerd` does.

package command

import srvconfig "github.com/containerd/containerd/services/server/config"

// LabDefaultConfig is the config `containerd` fills from its --config file (defaultConfig()).
func LabDefaultConfig() *srvconfig.Config { return defaultConfig() }
