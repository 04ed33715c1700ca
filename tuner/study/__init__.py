"""What a study means: spec -> runner -> objective -> pareto / validate / export (with `context`, the
per-study facts, and `duplicates`, replayed configs). Persistence and liveness live in `tuner.storage`,
which this room imports and which never imports it."""
