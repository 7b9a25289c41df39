"""Where a job's features come from, and what it may have.

The runner's menu, the job's own labels (from GitHub's jobs API), the team config at the
job's commit and explicit requests are merged here, checked against ``runner.policy``
and resolved into a plan; the pre-warmer does the same for a job that is only queued.
HTTP sits on this and maps its errors (:mod:`agent.sources.errors`) to statuses.
"""
