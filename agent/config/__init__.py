"""Configuration of the agent itself: models, loading and live reload.

Policy:
- the built-in defaults are complete: the agent runs with no file at all;
- a file (YAML) and then ``RUNNER_AGENT_<GROUP>__<KEY>`` environment variables override
  them; unknown keys anywhere are errors;
- every error names its source (file:line:column or the environment variable), the key
  path, the bad value and what was expected;
- token values are read from files and never appear in logs, errors or dumps.
"""
