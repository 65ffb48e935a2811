"""fx → fx transforms over the plain GraphModule that codegen gives, each with its kernels beside it.
None runs by default: the caller picks them by policy."""
