"""Engines other than digitlab's own torch training loop that a recipe can name.

`opencv_mlp`: OpenCV's `cv2.ml.ANN_MLP`, trained as the classic OpenCV tutorial trains it, and a
torch module that reproduces its predictions so the rest of digitlab can use the result.
"""
