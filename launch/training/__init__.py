"""The training loop and the components it drives: state, optimizer and schedule, where a session
starts, evaluation during training, batch sizing, profiling, progress, and the run's last stage."""
