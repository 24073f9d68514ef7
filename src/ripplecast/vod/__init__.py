"""Video on demand: probing uploads, planning renditions, transcoding to adaptive HLS, the job
queue and the worker that runs it."""
