"""Installing OS packages on the host that runs the job, through one step executor."""
