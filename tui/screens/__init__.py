"""The application's screens, one module each, plus the modal help and device picker."""
