package repository

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"time"

	"github.com/fsnotify/fsnotify"
)

// Watch reloads the registry whenever files under the repository change,
// after changes have been quiet for debounce (so a model being copied in
// loads once, complete). It returns when ctx ends.
func (r *Registry) Watch(ctx context.Context, debounce time.Duration) error {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return err
	}
	defer w.Close()
	r.watchTree(w)
	// Catch anything that changed between the first load and the watch.
	if _, err := r.Reload(); errors.Is(err, ErrClosed) {
		return nil // shutting down
	} else if err != nil {
		r.log.Error("reload", "err", err)
	}
	var timer *time.Timer
	var fire <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			if timer != nil {
				timer.Stop()
			}
			return nil
		case ev, ok := <-w.Events:
			if !ok {
				return nil
			}
			if ev.Op&(fsnotify.Create|fsnotify.Write|fsnotify.Remove|fsnotify.Rename|fsnotify.Chmod) == 0 {
				continue
			}
			if ev.Op&fsnotify.Create != 0 {
				if fi, err := os.Stat(ev.Name); err == nil && fi.IsDir() {
					r.watchDir(w, ev.Name, 2)
				}
			}
			if timer == nil {
				timer = time.NewTimer(debounce)
			} else {
				timer.Reset(debounce)
			}
			fire = timer.C
		case err, ok := <-w.Errors:
			if !ok {
				return nil
			}
			r.log.Warn("watching the model repository", "err", err)
		case <-fire:
			fire = nil
			if _, err := r.Reload(); errors.Is(err, ErrClosed) {
				return nil
			} else if err != nil {
				r.log.Error("reload", "err", err)
			}
			r.watchTree(w) // new model and version directories
		}
	}
}

// watchTree watches the repository, its model directories and their
// version directories.
func (r *Registry) watchTree(w *fsnotify.Watcher) { r.watchDir(w, r.dir, 3) }

func (r *Registry) watchDir(w *fsnotify.Watcher, dir string, depth int) {
	if depth == 0 {
		return
	}
	if err := w.Add(dir); err != nil {
		return
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range entries {
		if e.IsDir() {
			r.watchDir(w, filepath.Join(dir, e.Name()), depth-1)
		}
	}
}
