"""--profile-steps N: where the time of a training step goes, as a torch.profiler trace.

The profiler records N optimizer steps once `WARMUP_STEPS` have run (the first steps pay for page
faults, optimizer state and kernel selection), writes RUN/profile/trace.json (Chrome trace format:
open it in Perfetto, ui.perfetto.dev, or chrome://tracing; TensorBoard's profile plugin reads the
folder) and prints the operators that took the most time. The profiled steps are left out of
tokens/s: the profiler's own overhead would lower it.
"""

from __future__ import annotations

from pathlib import Path

WARMUP_STEPS = 2
TOP_OPERATORS = 12


class StepProfiler:
    def __init__(self, steps: int | None, run_dir: Path, first_step: int):
        self.steps, self.folder = steps, Path(run_dir) / "profile"
        self.start = first_step + WARMUP_STEPS  # counted from where this session starts
        self.profiler = None

    def check_length(self, total_steps: int, say) -> None:
        """A note at the start when the run ends before the profiled steps do: no trace would be written."""
        if self.steps and self.start + self.steps > total_steps:
            room = max(0, total_steps - self.start)
            say(
                f"note: --profile-steps {self.steps} would record steps {self.start + 1} to {self.start + self.steps}, "
                f"but this session ends at step {total_steps}: no trace will be written"
                + (f"; give --profile-steps {room} or less" if room else "; the run is too short to profile")
            )

    def after_update(self, step: int, say) -> bool:
        """Called after each optimizer update; True when the profile starts or ends here (tokens/s
        is then measured afresh, so the profiled steps count in neither window)."""
        if not self.steps:
            return False
        if step == self.start:
            import torch.profiler as tp

            self.profiler = tp.profile(activities=_activities(), record_shapes=True)
            self.profiler.start()
            say(f"profile: recording steps {step + 1} to {step + self.steps}")
            return True
        if self.profiler is None or step < self.start + self.steps:
            return False
        self.profiler.stop()
        self.folder.mkdir(parents=True, exist_ok=True)
        trace = self.folder / "trace.json"
        self.profiler.export_chrome_trace(str(trace))
        table = self.profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=TOP_OPERATORS)
        say(f"profile: {self.steps} steps written to {trace} (open it in ui.perfetto.dev); the top operators:\n{table}")
        self.profiler, self.steps = None, None
        return True

    def close(self) -> None:
        """A run that ends inside the profiled steps: stop recording, keep nothing half-written."""
        if self.profiler is not None:
            self.profiler.stop()
            self.profiler = None


def _activities():
    import torch
    import torch.profiler as tp

    return [tp.ProfilerActivity.CPU, *([tp.ProfilerActivity.CUDA] if torch.cuda.is_available() else [])]
