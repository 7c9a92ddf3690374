"""Models: potentials and fields, the objective they are trained for, integrators and TrainedModel."""
