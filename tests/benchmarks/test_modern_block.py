"""benchmarks/modern_block.py: its variants are the changes they name, and its time-to-target figure."""

from benchmarks.modern_block import VARIANTS, reach
from gpt_core import get_preset


def test_each_variant_changes_only_what_it_names_and_the_last_takes_them_all():
    small = get_preset("small")
    for name, (model, flags) in VARIANTS.items():
        config = get_preset(model) if isinstance(model, str) else small.replace(**model)
        changed = {k for k, v in config.to_dict().items() if v != small.to_dict()[k]}
        if name.startswith("+ "):
            assert changed == set(model) and (flags == ["--optimizer", "muon"]) == (name == "+ Muon")
    all_of_them = get_preset(VARIANTS["all (llama-small + Muon)"][0])
    assert (all_of_them.positions, all_of_them.normalization, all_of_them.activation) == ("rope", "rmsnorm", "swiglu")
    assert small.num_params() - all_of_them.num_params() < 0.02 * small.num_params()  # the same budget


def test_time_to_the_paper_blocks_last_validation_is_a_share_of_each_runs_steps():
    results = {
        "paper": {"curve": [(100, 2.0), (200, 1.8)], "steps": 200},
        "faster": {"curve": [(50, 1.9), (100, 1.79), (300, 1.6)], "steps": 300},
        "slower": {"curve": [(100, 2.5)], "steps": 100},
    }
    reach(results)
    assert results["paper"]["reach_share"] == 1.0 and results["faster"]["reach_share"] == 100 / 300
    assert results["slower"]["reach_share"] is None
