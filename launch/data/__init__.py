"""From a story source to batches of token ids, in stages, one file each.

    sources.py   hub id | file | folder | glob  --read in bounded chunks-->  raw records
    tokenize.py  --worker processes: clean, digest, tokenize-->  token chunks
    stream.py    --main process: drop duplicates, append-->  one token stream on disk
    splits.py    --cut or gather-->  train / validation / test files
    prepare.py   the token cache: key, lock, build, atomic rename, read back
    batching.py  --memory-mapped packed or padded rows-->  seeded, resumable, per-process batches

Import from the stage modules themselves (`from launch.data.prepare import prepare_data`). This
file imports nothing on purpose: the tokenizer's worker processes import `launch.data.tokenize`,
and must not pay for torch (~200 MB a process) through their package.

Everything a user sees is counted: stories dropped and why, tokens per split, stories truncated
and the padding fraction in `padded` mode.
"""
