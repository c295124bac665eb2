package main

import (
	"bytes"
	"embed"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/aegis-inference/aegis/internal/config"
	"github.com/aegis-inference/aegis/internal/pipeline"
)

// policies/*.yaml are the defence configurations the benchmark runs
// under, one file each, so that turning a defence on is a change of
// configuration, never of the harness.
//
//go:embed policies/*.yaml
var embeddedPolicies embed.FS

// policy is one defence configuration. Its file holds:
//
//	description: one line for the report
//	server:      a fragment of the server configuration (aegis serve's
//	             YAML), decoded strictly over the harness's base
//	             configuration (TLS, API keys, authorization, audit)
//	models:      per served model (the victims, and digits for the
//	             overhead), its config.yaml: extraction, outguard,
//	             watermark sections (YAML anchors and aliases welcome)
//	key_scopes:  the scopes (as `aegis keys create` sets them) of every
//	             key the attackers and benign clients use
//
// "${ROOT}" anywhere in the file stands for the repository's top
// directory (for files such as the extraction monitor's reference
// sample). An unknown field in the file itself is an error. A server
// that refuses the fragment (an unknown field: a defence not wired) or
// fails to load a model under it makes the policy unsupported: the report
// says why and its columns read n/a.
type policy struct {
	name        string
	Description string          `yaml:"description"`
	Server      map[string]any  `yaml:"server"`
	Models      map[string]any  `yaml:"models"`
	KeyScopes   pipeline.Scopes `yaml:"key_scopes"`
	unsupported string          // why the server refused the policy; "" if it did not
}

// loadPolicies reads the named policies from dir, or from the embedded
// files when dir is "".
func loadPolicies(dir, root string, names []string) ([]*policy, error) {
	fsys := fs.FS(embeddedPolicies)
	sub := "policies"
	if dir != "" {
		fsys, sub = os.DirFS(dir), "."
	}
	var out []*policy
	for _, name := range names {
		b, err := fs.ReadFile(fsys, filepath.ToSlash(filepath.Join(sub, name+".yaml")))
		if err != nil {
			return nil, fmt.Errorf("policy %s: %w", name, err)
		}
		b = bytes.ReplaceAll(b, []byte("${ROOT}"), []byte(root))
		p := &policy{name: name}
		if err := config.DecodeStrict(b, p); err != nil {
			return nil, fmt.Errorf("policy %s: %w", name, err)
		}
		if p.Description == "" {
			return nil, fmt.Errorf("policy %s: description: must be set", name)
		}
		for m := range p.Models {
			if !slices.Contains(servedModels, m) {
				return nil, fmt.Errorf("policy %s: models: %q is not a model the benchmark serves", name, m)
			}
		}
		out = append(out, p)
	}
	return out, nil
}

// apply decodes the policy's server fragment over cfg, strictly.
func (p *policy) apply(cfg *config.Config) error {
	if len(p.Server) == 0 {
		return nil
	}
	b, err := yaml.Marshal(p.Server)
	if err != nil {
		return err
	}
	if err := config.DecodeStrict(b, cfg); err != nil {
		return fmt.Errorf("server configuration: %w", err)
	}
	return nil
}

// modelConfig returns the config.yaml to write beside model, or nil.
func (p *policy) modelConfig(model string) ([]byte, error) {
	n, ok := p.Models[model]
	if !ok {
		return nil, nil
	}
	return yaml.Marshal(n)
}

// supported reports whether the server accepted the policy.
func (p *policy) supported() bool { return p.unsupported == "" }

func (p *policy) String() string { return p.name }

// splitList splits a comma-separated list.
func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}
