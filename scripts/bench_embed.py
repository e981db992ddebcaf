"""Encoder throughput benchmark; same as `stratus bench embed` (see stratus_tools.benchmarks.embed).

Example: .venv/bin/python scripts/bench_embed.py --python /tmp/stvenv/bin/python --json bench-out/embed.json
"""

from __future__ import annotations

from stratus_tools.benchmarks.embed import main

if __name__ == "__main__":
    raise SystemExit(main())
