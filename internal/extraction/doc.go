// Package extraction detects model-extraction attacks per principal and per
// group of principals.
package extraction
