"""``python -m swell_worker``: the process the worker Deployment runs, configured from the environment."""

from swell_worker.runtime import run_from_env

if __name__ == "__main__":
    raise SystemExit(run_from_env())
