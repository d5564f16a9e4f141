"""Front ends: the command line, the headless runner's display, the operator console, the
benchmarks and the simulator server. They sit on the core (``aldctl.session``,
``aldctl.tool``, ``aldctl.engine``, ``aldctl.recipe``, ``aldctl.config``) and talk to runs
through the operator API; nothing in the core imports them."""
