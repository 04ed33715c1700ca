"""How a study persists and survives: one room, imported by `tuner.study` and never importing it.

- `database`: Optuna's RDB storage plus our tables (Pareto snapshots), opened strictly;
- `keys`: every study/trial attribute key tuner stores, defined once;
- `budget` / `heartbeat`: the exact trial budget and worker liveness (`trial_slots`, `study_runs`);
- `workers`: K worker processes of one study on this host, and the per-trial progress line they print;
- `validation_table`: the `front_validations` table `tuner study validate` writes;
- `dashboard_view`: the storage as optuna-dashboard should see it (constraints visible).
"""
