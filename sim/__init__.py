"""Reactor simulator: physics in integer virtual time, process library, fault injection and
device emulators speaking the real wire protocols. Never imports ``aldctl`` or ``drivers``.

Modules of the physics side:

* :mod:`sim.reactor` - :class:`~sim.reactor.Reactor`, the 0-D reactor model (time, commands,
  reads, ground truth, snapshots); re-exports the configuration classes. Its layers, each
  importing only those below: :mod:`sim.fault_effects`, :mod:`sim.gas` (gas phase and the
  integrators), :mod:`sim.plant` (devices as the physics sees them), :mod:`sim.surface`
  (surface chemistry), :mod:`sim.state` (state, readings, snapshots).
* :mod:`sim.config` - :class:`~sim.config.ReactorConfig` and its parts, presets,
  ``for_lines`` and ``from_mapping``.
* :mod:`sim.kinetics` - which cycle kinds a reactor grows and their per-site rates
  (parameters in ``data/kinetics.yaml``, documented there).
* :mod:`sim.components` - valves, MFCs, heaters with PID, gauge, QCM, RF source, ozone
  generator (the models; :mod:`sim.devices` holds the wire-protocol emulators).
* :mod:`sim.faults` - the fault catalogue, triggers and communication-fault queries.
* :mod:`sim.trace` - fixed-interval traces to a callback or a CSV file.
* :mod:`sim.oracles` - closed-form golden results the model is tested against.
* :mod:`sim.sequence` - drive doses and (super)cycles straight on a reactor.
* :mod:`sim.bench` - ``python -m sim.bench``: speed and memory of the model.
* :mod:`sim.chemistry`, :mod:`sim.library`, :mod:`sim.delivery` - chemical catalogue, process
  library (GPC(T) rules) and the planner's dose estimate.
"""
