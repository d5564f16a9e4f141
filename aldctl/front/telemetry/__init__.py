"""Fleet telemetry over MQTT (aiomqtt): a front end, like the console.

* :mod:`.publisher`: the run process's bridge to a broker (state, telemetry, events,
  pulses, alarms; remote commands through the operator API);
* :mod:`.monitor`: ``aldctl monitor``, every tool on a broker in one table;
* :mod:`.historian`: ``aldctl record``, the lab's central record (SQLite per tool and day).

The core never imports this package; the run process wires it in from the command line.
"""
