"""Where the model looks: per-token attention maps on the page, their overlays and the HTML viewer."""
