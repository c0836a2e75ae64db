"""Where frames come from: the episode dataset format, video file I/O, env adapters (Procgen, Meta-World),
demonstrators, and the lowest-layer helpers every package uses (atomic writes, the model interface).
Never imports ``lapo`` or ``worldmodel``; heavy simulators are imported by the modules that need them."""
