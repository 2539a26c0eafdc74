"""Pure renderers: typed inputs in, text or argv lists out. Nothing here touches a node or an engine."""
