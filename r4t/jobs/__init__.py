"""Stage entry points: `python -m r4t.jobs.<stage> --config jobs/<stage>.yaml [key=value ...]`."""
