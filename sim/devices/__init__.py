"""Device emulators: the simulated reactor behind the real wire protocols.

Each emulator serves one bus or endpoint (a Modbus TCP server, a pseudo-terminal carrying
an RS-485 bus of several units) and answers exactly as the real instrument does, with its
values taken from a :class:`sim.realtime.RealtimePlant`. Communication faults injected in
the simulator (``reactor.faults.comm(component)``) act on the wire: silence, corrupt
frames, delays, dropped connections. Emulators never import ``drivers``.
"""
