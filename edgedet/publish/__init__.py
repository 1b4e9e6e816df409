"""Publishing: MQTT client, message building (versioned JSON contract) and the durable outbox."""
