"""launch/settings/sweep_space.py: a sweep's YAML search space, read and checked before any work,
and sampled through a real Optuna trial."""

import pytest

from launch.errors import UserError
from launch.settings.config import TrainConfig
from launch.settings.sweep_space import as_flags, load_space, parse_space

optuna = pytest.importorskip("optuna")


def sample(space, base, seed=0):
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    return space.suggest(study.ask(), base)


def test_ranges_lists_and_tokens_per_step_are_sampled_as_train_takes_them(tmp_path):
    file = tmp_path / "space.yaml"
    file.write_text(
        "lr: {low: 1.0e-4, high: 1.0e-2, log: true}\n"
        "--warmup-steps: {low: 0, high: 200, step: 50}\n"
        "dropout: [0.0, 0.1]\n"
        "schedule: [cosine, wsd]\n"
        "batch_size: {choices: [2, 4, 8], keep_tokens_per_step: true}\n"
    )
    space = load_space(str(file))
    base = TrainConfig(batch_size=4, grad_accum=4)  # 16 rows per update
    for seed in range(8):
        values = sample(space, base, seed)
        assert 1e-4 <= values["lr"] <= 1e-2 and values["warmup_steps"] in (0, 50, 100, 150, 200)
        assert values["dropout"] in (0.0, 0.1) and values["schedule"] in ("cosine", "wsd")
        assert values["batch_size"] * values["grad_accum"] == 16
        assert isinstance(values["warmup_steps"], int)
        flags = as_flags(values)
        assert flags[flags.index("--lr") + 1] == repr(values["lr"]) and "--warmup-steps" in flags


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("lrr: {low: 1, high: 2}", "unknown setting 'lrr'; did you mean lr?"),
        ("lr: {low: 1.0e-2, high: 1.0e-4}", "lr's range is upside down (low 0.01 > high 0.0001); swap them"),
        ("lr: {low: 0, high: 1.0e-2, log: true}", "lr on a log scale needs low > 0"),
        ("output_dir: [a, b]", "output_dir is not a training choice a sweep varies; give it as a fixed flag"),
        ("schedule: [cosine, spiral]", "schedule choice 'spiral' is not a valid value"),
        ("lr: {low: 1.0e-4}", "lr needs both low and high"),
        ("warmup_steps: {low: 0.5, high: 10}", "warmup_steps takes whole numbers"),
        ("dropout: {low: 0.0, high: 1.5}", "dropout's range reaches a value train refuses"),
        ("lr: 0.001", "lr must be a list of values or a range"),
        ("[1, 2]", "must map train settings to values"),
        ("lr: {low: 1, high: 2, scale: log}", "lr has unknown keys ['scale']"),
        ('batch_size: {choices: [2, 4], keep_tokens_per_step: "false"}', "keep_tokens_per_step must be true or false"),
        ("batch_size: {choices: [2, 4], keep_tokens_per_step: yes please}", "keep_tokens_per_step must be true or"),
        ('lr: {low: 1.0e-4, high: 1.0e-2, log: "no"}', "lr's log must be true or false (no quotes), got 'no'"),
        ("lr: [0.001]\n--lr: [0.01]", "lr is given twice ('lr' and '--lr'); keep one"),
    ],
)
def test_a_bad_space_is_one_line_naming_the_setting(text, message):
    import yaml

    with pytest.raises(UserError, match=r"^SPACE s\.yaml") as error:
        parse_space(yaml.safe_load(text), "SPACE s.yaml")
    assert message in str(error.value) and "\n" not in str(error.value)


def test_a_missing_or_broken_space_file_is_one_line(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_space(str(tmp_path / "nope.yaml"))
    (tmp_path / "bad.yaml").write_text("lr: {low: [\n")
    with pytest.raises(UserError, match="is not valid YAML"):
        load_space(str(tmp_path / "bad.yaml"))


def test_a_setting_given_twice_in_the_file_is_one_line_not_the_last_range(tmp_path):
    (tmp_path / "twice.yaml").write_text("lr: {low: 1.0e-4, high: 1.0e-2}\ndropout: [0.0]\nlr: [0.5]\n")
    with pytest.raises(UserError, match=r"^SPACE .*twice\.yaml: lr is given twice \(line 3\); keep one$"):
        load_space(str(tmp_path / "twice.yaml"))


def test_batch_sizes_that_cannot_keep_the_tokens_per_step_are_refused_before_the_study():
    space = parse_space({"batch_size": {"choices": [3, 4], "keep_tokens_per_step": True}}, "SPACE s.yaml")
    with pytest.raises(UserError, match=r"batch_size \[3\] do not divide the 16 rows per update"):
        space.check(TrainConfig(batch_size=4, grad_accum=4))
    space.check(TrainConfig(batch_size=4, grad_accum=3))  # 12 rows: 3 and 4 both divide
