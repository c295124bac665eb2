package repository

import (
	"fmt"

	"gopkg.in/yaml.v3"

	"github.com/aegis-inference/aegis/internal/config"
	"github.com/aegis-inference/aegis/internal/outguard"
	"github.com/aegis-inference/aegis/internal/tensor"
	"github.com/aegis-inference/aegis/internal/watermark"
)

// applyDefaults gives the sections of a model's config.yaml that are
// present the defaults of their fields: a section decodes over its
// package's defaults, so `outguard: {}` is the hardened default policy and
// `watermark: {}` the default rate. Sections absent stay nil.
func applyDefaults(b []byte, mc *ModelConfig) error {
	var present map[string]yaml.Node
	if err := yaml.Unmarshal(b, &present); err != nil {
		return nil // the strict decode reports it
	}
	if _, ok := present["outguard"]; ok {
		p := outguard.Default()
		mc.Outguard = &p
	}
	if _, ok := present["watermark"]; ok {
		w := watermark.DefaultConfig()
		mc.Watermark = &w
	}
	return config.DecodeStrict(b, mc)
}

// loadOutputs checks a version's output hardening and watermark against
// its declared outputs: a misconfigured model does not load rather than
// failing every request.
func loadOutputs(mc ModelConfig, outputs []tensor.Spec, wmKey []byte) (*outguard.Policy, *watermark.Watermarker, error) {
	var pol *outguard.Policy
	if mc.Outguard != nil {
		if err := mc.Outguard.Validate(); err != nil {
			return nil, nil, fmt.Errorf("outguard.%w", err)
		}
		if err := outguard.Check(*mc.Outguard, outputs); err != nil {
			return nil, nil, fmt.Errorf("outguard: %w", err)
		}
		p := *mc.Outguard
		pol = &p
	}
	var wm *watermark.Watermarker
	if mc.Watermark != nil {
		if len(wmKey) == 0 {
			return nil, nil, fmt.Errorf("watermark: no watermark key (state_dir)")
		}
		var err error
		if wm, err = mc.Watermark.Watermarker(wmKey, outputs); err != nil {
			return nil, nil, fmt.Errorf("watermark.%w", err)
		}
	}
	return pol, wm, nil
}

// Outguard returns the version's output policy: the model's, or Full when
// its config.yaml has no outguard section.
func (v *Version) Outguard() outguard.Policy {
	if v.outguard == nil {
		return outguard.Full()
	}
	return *v.outguard
}

// Watermarker returns the version's watermarker, or nil.
func (v *Version) Watermarker() *watermark.Watermarker { return v.watermarker }
