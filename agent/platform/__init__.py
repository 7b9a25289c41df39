"""The platform layer: what a machine is and how to install system packages on it.

Policy:
- the target platform is always explicit data (a :class:`~agent.platform.model.Platform`
  passed in, or parsed from a triple such as ``linux/x64/glibc``); nothing below the face
  assumes the target is the machine the agent runs on;
- detection (:mod:`agent.platform.detect`) only describes the machine the code runs on,
  and it is the one place here that touches the file system;
- commands are argv lists, never shell strings, and package names are checked before they
  reach one, so a name can never become an option or a second command;
- this is ground: it imports nothing from ``agent`` outside ``agent.platform`` and only the
  standard library.
"""
