"""Small purpose-built services for the supervisor's fault paths.

Each is run as ``python fakes/<name>.py WORKDIR [args]``: WORKDIR on the command line lets
the stray-process check find anything of the test's left running.
"""
