"""Causing real faults for the tests: a run in a process of its own that logs every step, a
kill or a signal at a chosen step, a file-size limit that fails writes as a full disk, and the
one-line error every user mistake must be."""

import json
import resource
import subprocess
import time

from tests.helpers import REPO, child_env, losses, train_here
from tests.helpers import train_args as tiny_train_args


def train_args(out, *extra):
    """The tiny run in a process of its own, logging every step: a fault must be seen at the step it happens."""
    return tiny_train_args(out, "--log-every", "1", *extra)


def train(out, *extra, check=True):
    """The same run in this process."""
    return train_here(out, "--log-every", "1", *extra, check=check)


def start(args, env=None):
    return subprocess.Popen(
        args, cwd=REPO, env=child_env(env), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def with_file_size_limit(args, limit: int):
    """Run `args` where no file may grow past `limit` bytes: writes then fail as on a full disk."""

    def limit_file_size():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return subprocess.run(
        args, cwd=REPO, env=child_env(), capture_output=True, text=True, preexec_fn=limit_file_size, timeout=300
    )


def wait_for_step(run_dir, step, proc, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if (run_dir / "metrics.jsonl").exists() and max(losses(run_dir), default=0) >= step:
            return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    raise AssertionError(f"step {step} not reached")


def one_error_line(result, words):
    """A finished process (returncode) or an in-process command (exit_code): status 2, one error line."""
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert getattr(result, "returncode", getattr(result, "exit_code", None)) == 2, result.stderr[-2000:]
    assert len(errors) == 1 and words in errors[0], result.stderr[-2000:]
    assert "Traceback" not in result.stderr


def comparable(summary: dict) -> dict:
    """A summary without what differs between two runs of the same settings: times and folders."""
    timing = ("elapsed_seconds", "throughput_tokens_per_s", "best_checkpoint")
    data = {k: v for k, v in summary["data"].items() if k not in ("cache", "prepare_seconds", "tokens_per_second")}
    config = {k: v for k, v in summary["config"].items() if k not in ("output_dir", "resume")}
    config["data"] = {k: v for k, v in config["data"].items() if k != "cache_dir"}
    return {**{k: v for k, v in summary.items() if k not in timing}, "data": data, "config": config}


def untimed(run_dir) -> list[dict]:
    return [
        {k: v for k, v in r.items() if k != "tokens_per_s"}
        for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())
    ]
