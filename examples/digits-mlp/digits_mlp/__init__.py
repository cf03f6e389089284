"""An example of a team's own training code on the platform: a small MLP for digits."""
