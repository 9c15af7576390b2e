"""Label Studio ML backend that serves EXAMINE rankings."""
