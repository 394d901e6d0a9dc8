//! Helpers shared by the kafka-ops reference apps.
