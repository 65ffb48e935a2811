"""Graph → torch: cost passes over the graph, codegen to a torch.fx GraphModule, and the few modules
the generated code calls."""
