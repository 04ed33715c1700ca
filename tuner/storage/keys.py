"""Every attribute key tuner stores on Optuna studies and trials, defined once.

The study room (spec, runner, objective, pareto, export) and the storage room (budget, heartbeat) both
import this module and nothing else of each other's for a key, so the names of what a database holds are
read in one place (as Optuna's GA base derives its keys in one place). Keys in the `tuner:` namespace are
system attributes (tuner's bookkeeping); the others are user attributes, visible in optuna-dashboard.
"""

# --- study user attributes: what every trial of the study is measured against -----------------------
BASELINE_ATTR = "baseline"  # the baseline's metrics, measured by the study's first process
MODEL_ATTR = "model_id"
ENVIRONMENT_ATTR = "environment"  # device and versions the study measured on (what export reports)
FINGERPRINT_ATTR = "spec_fingerprint"  # the TOML settings a resumed run must not change

# --- study system attributes ------------------------------------------------------------------------
WARM_START_ATTR = "tuner:warm_start_queued"

# --- trial system attributes: which worker created the trial, in which budget slot ------------------
RUN_ATTR = "tuner:worker"
SLOT_ATTR = "tuner:slot"

# --- trial system attributes of the DEAP samplers (tuner.samplers.deap_ga) -----------------------------
GENOME_KEY = "tuner:genome"
ENGINE_KEY = "tuner:engine"
PARENTS_KEY = "tuner:parents"

# --- trial user attributes ------------------------------------------------------------------------------
CONFIG_ATTR = "config"  # the trial's AccelConfig methods
DUPLICATE_ATTR = "duplicate_of"  # the trial whose result this one replays
FAIL_REASON_ATTR = "fail_reason"
PRUNE_REASON_ATTR = "prune_reason"
