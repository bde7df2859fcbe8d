"""Where Microsoft sends admins back: routing a return to its step, and the HTML pages."""
