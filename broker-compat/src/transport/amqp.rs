//! AMQP 0-9-1 transport via lapin, as kombu/py-amqp declare and consume (spec §3).
