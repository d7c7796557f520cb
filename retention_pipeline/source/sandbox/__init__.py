"""An embedded, deterministic Metronome tenant that speaks the real wire format (in-process and on loopback)."""
