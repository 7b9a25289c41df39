"""The job hook client ``runner-agent-hook``: the process the runner runs at each job's
start and end, and for explicit ``ensure`` steps.

Policy:
- it runs in the RUNNER container, on whatever Python the runner image carries: the
  standard library only, Python 3.8 and newer (``vermin -t=3.8-`` checks it), and of
  ``agent`` only :mod:`agent.platform` (import-linter checks it);
- it is shipped as one zipapp (:mod:`agent.hook.build`) run with ``python3 -I``, through
  the ``.sh`` wrappers in ``wrappers/``;
- it talks to the agent over the unix socket only, and never prints the token or the
  job's secret;
- every line it prints is for the job log: one line per event that matters, each error
  naming what is wrong and what to do.
"""
