"""Test support, shipped with the package so that Ray workers on every node can import it (as
`prefect.testing` and `ray.cluster_utils` are shipped). Product code never imports it."""
