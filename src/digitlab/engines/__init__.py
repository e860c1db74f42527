"""Engines other than digitlab's own torch training loop that a recipe can name.

`opencv_mlp_trainer`: OpenCV's `cv2.ml.ANN_MLP`, trained as the classic OpenCV tutorial trains it;
its weights go into the torch module that reproduces its predictions (models/opencv_mlp_net.py), so
the rest of digitlab can use the result.
"""
