"""SpeechBrain ``Brain`` subclasses: pre-training and fine-tuning."""
