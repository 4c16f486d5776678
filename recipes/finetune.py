"""Fine-tuning: continue a trained model on other stories, at a lower learning rate.

    accelerate launch recipes/finetune.py --init-from runs/tinystories --data my_stories.jsonl
    accelerate launch recipes/finetune.py --init-from models/tinystories --data stories/
    accelerate launch recipes/finetune.py --init-from ./gpt2 --data stories.jsonl    # a local copy of OpenAI's GPT-2

--init-from takes a run (its best weights), a checkpoint, a `gpt-launch export` folder, or a
transformers GPT-2 / OpenAI GPT folder. The model's shape comes from there; only its weights are
taken: the optimizer, the schedule and the step start fresh, and the run validates once before its
first step, so its curves start from the model it continues. Every value below is a TrainConfig
field and can be changed on the command line (see --help).
"""

from launch.cli import train_command
from launch.settings.config import DataConfig, TrainConfig

RECIPE = TrainConfig(
    data=DataConfig(max_samples=None),  # every story of the new data
    lr=5e-5,  # a tenth of a from-scratch run's or less: the weights are already good
    warmup_steps=20,
    epochs=3,
    patience=2,
    eval_every=50,
    output_dir="runs/finetune",
)

if __name__ == "__main__":
    train_command(RECIPE, name="finetune", help_text=__doc__, needs=("init_from",))()
