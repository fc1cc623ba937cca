"""A Flask + Flask-SQLAlchemy app (an app factory and the global ``db``), tested with elefast.

Its own config is SQLite; its tests run it on PostgreSQL with no change to the app, through
``app_engines = (db,)``: see ``tests/test_signup.py``.
"""

from flask import Flask, jsonify, request
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy.exc import IntegrityError

db = SQLAlchemy()


class User(db.Model):
    __tablename__ = "users"
    id = db.Column(db.Integer, primary_key=True)
    email = db.Column(db.String(120), unique=True, nullable=False, index=True)


def create_app(config=None):
    """The app factory: the app's own database unless ``config`` says otherwise."""
    app = Flask(__name__)
    app.config["SQLALCHEMY_DATABASE_URI"] = "sqlite:///flask_app.db"
    app.config.update(config or {})
    db.init_app(app)

    @app.post("/users")
    def sign_up():
        db.session.add(User(email=request.json["email"]))
        try:
            db.session.commit()
        except IntegrityError:
            db.session.rollback()
            return jsonify(error="taken"), 409
        return jsonify(count=db.session.query(User).count()), 201

    @app.get("/users")
    def listing():
        return jsonify(sorted(user.email for user in db.session.query(User)))

    return app
