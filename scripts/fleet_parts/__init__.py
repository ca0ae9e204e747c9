"""Parts of scripts/fleet: fault-injecting TCP proxies, the simulated machines, the
workload and the report."""
