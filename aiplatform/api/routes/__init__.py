"""The REST API's resources, one router each."""
