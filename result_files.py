"""What ann_results.json and snn_results.json must hold for the study to read them.

evaluation.py writes these files (paths.py names them); reproduce.py and report.py read them through
`read_results`, so a file that lacks a key (written by an older version, or torn) is refused by
name instead of being misread. The writers add more keys (model, per-step accuracy, ...); these
are the ones the study relies on.
"""
from architectures import TIE_RULES
from cli import UserError, is_number, read_json_object

ANN_KEYS = ("accuracy", "n_test")  # ann_results.json
SNN_KEYS = ("final_accuracy", "steps_to_final", "positive_spikes_per_sample", "negative_spikes_per_sample",
            "sops_per_sample", "n_test", "time_steps")  # snn_results.json
LOSSLESS_KEYS = ("mismatching_neurons", "rounding_tie_neurons", "downstream_of_ties_neurons",
                 "samples_still_spiking_at_the_last_step", "unsettled_neurons", "other_mismatching_neurons",
                 "mismatching_predictions", "first_step_all_predictions_match")  # lossless_check[tie rule]
MAY_BE_NONE = {"first_step_all_predictions_match"}  # null when the predictions never all match


def read_results(path, keys, lossless=False):
    """A results JSON whose `keys` (and, with `lossless`, lossless_check's) hold numbers; UserError otherwise."""
    results = read_json_object(path)
    checks = [(results, key, key) for key in keys]
    if lossless:  # {"paper": {...}, "exact": {...}}: one report per tie rule
        per_rule = results.get("lossless_check")
        if not (isinstance(per_rule, dict) and all(isinstance(per_rule.get(rule), dict) for rule in TIE_RULES)):
            raise UserError(f"{path}: no lossless_check for each tie rule (rerun its stage, or --force)")
        checks += [(per_rule[rule], key, f"lossless_check.{rule}.{key}") for rule in TIE_RULES for key in LOSSLESS_KEYS]
    for where, key, label in checks:
        value = where.get(key)
        if not (is_number(value) or (key in MAY_BE_NONE and key in where and value is None)):
            raise UserError(f"{path}: '{label}' is missing or not a number (rerun its stage, or --force)")
    return results


def results_match(path, keys, lossless=False, **expected):
    """True when the results at `path` are well formed and from a run with the `expected` values (e.g. n_test=50)."""
    try:
        results = read_results(path, keys, lossless)
    except UserError:
        return False
    return all(results.get(key) == value for key, value in expected.items())
