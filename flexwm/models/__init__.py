"""World models: the flexible transformer, flow matching, and the interface planners depend on."""
