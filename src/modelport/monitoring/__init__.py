"""Model monitoring: reference profiles, drift, feedback scores and replay of logged inferences."""
