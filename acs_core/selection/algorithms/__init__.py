"""Selection algorithms: pure functions on tensors (no model code), one idea per module, so every selector can call
them on whatever it extracted and the tests can check them against brute force."""
